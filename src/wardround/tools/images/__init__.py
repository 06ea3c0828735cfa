"""Medical image search: DICOM/raster loading (`dicom`), encoders (`encoders`: MedSigLIP and
the embedded EfficientNet-Lite0), the Chroma index (`index`), ingest (`ingest`), search
(`search`), the `search_images` tool (`tools`) and the bundled real images (`corpus`).

Importing `wardround.tools.images.encoders` registers the Chroma embedding function that
image collections were created with, for code that opens them with chromadb directly.
"""
