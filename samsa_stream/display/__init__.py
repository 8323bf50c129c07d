"""Displays: the broadcast subscriber every display builds on, the reference viewer and the prompt console."""
