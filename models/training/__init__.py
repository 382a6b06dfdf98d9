"""What trains: meta-training, its task context, losses, differential privacy and domain transfer."""
