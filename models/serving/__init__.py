"""What serves online: adaptation requests, the Recommender and its closed-form inner loop."""
