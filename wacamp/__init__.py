"""wacamp, the command line: the top floor, on the domain (`campaigns`) and the engine (`scheduler`)."""
