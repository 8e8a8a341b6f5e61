"""corpusmill: validated, versioned, reproducible dataset releases as Prefect flows.

The code lives in the design card's top-level folders, installed under this one name so
nothing collides with another package's `tasks` or `flows`:

- `corpusmill.flows` (`flows/`): the Prefect flows, progress bars and the CLI;
- `corpusmill.tasks` (`tasks/`): the work of each stage, as plain functions on shards;
- `corpusmill.expectations` (`expectations/`): the Great Expectations suites.

See docs/architecture.md for how they fit together.
"""
