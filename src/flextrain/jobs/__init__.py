"""Job store, environments and worker process supervision."""
