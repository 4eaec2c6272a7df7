"""Pure outreach: rules, conditions, schedules, the contact policy, templates, previews and
backtests as functions of their inputs. Nothing here touches the database, the network, the
clock or the environment; it imports nothing from store, shell or api."""
