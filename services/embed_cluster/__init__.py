"""The embed-and-cluster service: caption embeddings and their FINCH partitions."""
