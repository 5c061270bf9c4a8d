"""Chat-ops: Slack slash commands and a JSON API that start runbook deployments and answer
approval gates (``runbooks chatops``).

- :mod:`chatops.signing` (pure): Slack's ``v0`` request signature and the API's bearer token;
- :mod:`chatops.commands` (pure): command text -> frozen commands, runbook parameters validated
  with :mod:`runbooks.catalogue`, access rules per command and runbook;
- :mod:`chatops.config`: the ``chatops-settings`` Prefect block (secrets, rules, links);
- :mod:`chatops.server`: the ASGI app over the Prefect API, :func:`~chatops.server.serve`.

Nothing heavy is imported here, so importing a pure module stays cheap.
"""
