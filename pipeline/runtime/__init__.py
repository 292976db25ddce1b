"""What both training and evaluation run on: the device and its autocast, the model's input,
the network built by name, and the checkpoint that hands a trained network from one to the other."""
