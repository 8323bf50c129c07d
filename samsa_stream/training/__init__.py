"""Training the decoder engine's fusion adapter few-shot (SAMSA's learned late fusion), SAM2 frozen.

``adapter`` holds the training core: simulated click sessions as in evaluation, the loss on the
last click, validation, early stopping, resumable checkpoints and torchrun ranks. The
``train-adapter`` command reads a labelled dataset and writes the adapter file the decoder engine
loads (``worker.adapter``).
"""
