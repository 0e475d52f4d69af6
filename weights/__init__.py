"""Released ERNIE weights into this project's format (`ernie-sm import-weights`)."""
