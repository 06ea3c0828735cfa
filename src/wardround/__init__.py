"""wardround: agentic clinical workflows over FHIR, images and guidelines."""

__version__ = "0.1.0"
