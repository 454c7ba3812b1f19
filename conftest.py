pytest_plugins = ["apwake.sim.harness.pytest_plugin"]
