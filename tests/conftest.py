pytest_plugins = ["tests.peers.plugin"]
