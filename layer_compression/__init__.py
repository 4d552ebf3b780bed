"""The seed document's import path: `from layer_compression.layer_compression_skipping import
LayerCompressionAndSkipping`."""
