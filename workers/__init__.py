"""The worker: hardware detection, the lease loop, the build-and-measure sandboxes.

A worker machine needs ``tunehub`` + ``workers`` + TVM and nothing else: it talks
to the service over HTTP only and never imports ``db``, ``service`` or ``tuner``.
Modules: ``detect`` (what this machine is: targets, GPUs, CUDA compiler),
``sandbox`` (the child process that builds, checks and times candidates),
``building``, ``checking`` and ``timing`` (what the sandbox does), ``sandbox_client`` (keeps
one sandbox alive across crashes), ``measure`` (parallel builds, exclusive runs,
calibration), ``api`` (HTTP with retries), ``daemon`` (the lease loop of one
device), ``fleet`` (one daemon per device).
"""
