"""The FHIR tools agents call: `tools.make_fhir_tools` (reads, searches, writes), their
argument schemas (`args`) and the order writes (`writes`), all on `wardround.fhir`."""
