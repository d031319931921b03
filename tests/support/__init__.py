"""The kit every test package shares.

- :mod:`tests.support.clock`: a fake clock that moves only when the test says so.
- :mod:`tests.support.ports`: free TCP ports on loopback.
- :mod:`tests.support.processes`: real server processes on loopback, started, awaited, stopped.
- :mod:`tests.support.redis`: the ``redis_server`` fixture, a real ``redis-server`` per session.
"""
