"""The embedding model: encoder settings, the Encoder, export folders and the one loader."""
