"""Pure array functions on spectra: spectral angles and similarity, pseudo-RGB rendering."""
