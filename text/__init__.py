"""Text handling shared by `ernie-sm prepare` and `ernie-sm evaluate`: the vocab, the
tokenizer and the documents of a corpus."""
