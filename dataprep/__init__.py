"""Raw text to ERNIE pretraining shards (`ernie-sm prepare`) and shards to S3 (`ernie-sm upload`)."""
