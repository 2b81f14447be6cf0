"""Imported by the ingest forkserver: load and compile the FHIR model once for all workers."""

from healthmesh.ingest.worker import warm_up

warm_up()
