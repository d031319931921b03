"""The development stack: never part of a deployment.

- :mod:`devstack.stack`: ``bff dev``, the sandbox backend, the development OpenID provider and
  the gateway in one command on loopback.
- :mod:`devstack.idp`: the development OpenID provider (``python -m devstack.idp``), built on
  oidc-provider-mock and flask from the ``dev`` extra.
- :mod:`devstack.cli`: adds ``dev`` to the ``bff`` command through the ``bff.commands`` entry
  point group, so that the gateway itself never imports this package.

Imports go one way: ``devstack`` → ``bff``, ``sandbox``; nothing in ``bff`` imports ``devstack``.
"""
