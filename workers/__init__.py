"""The worker: hardware detection, the lease loop, the build-and-measure sandbox.

A worker machine needs ``tunehub`` + ``workers`` + TVM and nothing else: it talks
to the service over HTTP only and never imports ``db``, ``service`` or ``tuner``.
Modules: ``detect`` (what this machine is), ``sandbox`` (the child process that
builds and times candidates), ``sandbox_client`` (keeps one alive across crashes),
``api`` (HTTP with retries), ``daemon`` (the lease loop).
"""
