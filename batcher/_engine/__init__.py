"""The run itself: the online and batch executors, pool routing, the scheduler, the tally, the
spend budget and the runner that assembles them."""
