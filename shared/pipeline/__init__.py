"""The method's shared steps: stage table, ingest, progress, clustering, tree, hierarchy."""
