"""The real local infrastructure of the embedded default: FHIR server, synthetic patients, model."""
