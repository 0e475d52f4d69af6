"""The contract every part shares: errors, tasks, hyperparameters, metrics, the dataset
filelist and text files. Standard library only: the Prepare Lambda and the training image
both carry it."""
