"""Image fusion around M2PN (the network is `model.image_fusion`): its losses, quality scorers,
training, the standard metrics and the baselines it is compared with."""
