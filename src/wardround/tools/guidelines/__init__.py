"""Clinical guideline lookup: section-aware ingest (`ingest`), the hybrid MiniLM + BM25
index (`index`), the `lookup_guideline` tool (`tools`) and the starter corpus (`corpus/`).
"""
