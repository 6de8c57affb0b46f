"""S3 event ingestion: the webhook and the SQS worker share one parser and one apply."""
