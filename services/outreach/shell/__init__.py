"""Outreach's loops and transactions: the change consumer, deciding actions, the scheduler,
delivery, broadcasts, and the channels that send. Imports store and core, never api."""
