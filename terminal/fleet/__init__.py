"""Load fleets: many simulated terminals in one process (and as Locust users), and what a run measured."""
