"""Channel ownership and the inter-worker bus."""
