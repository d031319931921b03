"""The kit every test package shares; ``conftest.py`` files hold only fixtures built on it.

- :mod:`tests.support.clock`: a fake clock that moves only when the test says so.
- :mod:`tests.support.ports`: free TCP ports on loopback.
- :mod:`tests.support.processes`: real server processes on loopback, started, awaited, stopped.
- :mod:`tests.support.redis`: the ``redis_server`` fixture, a real ``redis-server`` per session.
- :mod:`tests.support.silent`: a server that accepts connections and never answers.
- :mod:`tests.support.gateway`: the BFF driven in-process, its upstream mocked; its paths,
  principals, settings and problem check.
- :mod:`tests.support.provider`: a fake OpenID provider, its users and keys.
- :mod:`tests.support.tokens`: JOSE by hand, to sign or forge any token.
- :mod:`tests.support.cookies`: a browser's cookie keeping, for the in-process BFF.
- :mod:`tests.support.signin`: the BFF with its real authenticators over the fake provider.
- :mod:`tests.support.dev_provider`: the development OpenID provider as a process.
- :mod:`tests.support.oidc_login`: signing in through the gateway and the development provider as
  a browser would, hop by hop.
- :mod:`tests.support.dev_stack`: ``python -m bff dev`` as a process.
- :mod:`tests.support.openapi`: the gateway's OpenAPI document and the check that a response
  conforms to it.
- :mod:`tests.support.backend`: the backend API as the client's tests fake it.
- :mod:`tests.support.sandbox_app`: the sandbox as its tests drive it in-process.
- :mod:`tests.support.chromium`: Debian's Chromium under Playwright, for the browser tests.
"""
