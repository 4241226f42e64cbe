"""Market data: the dataset contract, the calendar, features, labels and the demo market."""
