"""The senders, one module per channel kind: each turns one attempt to send an action into an
:class:`~services.outreach.core.channels.Attempt` (see :mod:`services.outreach.core.channels`)."""
