"""Reading image-text data: readers of each format, the demo set, collators and the frozen-tower feature cache."""
