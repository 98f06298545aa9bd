"""Alembic environment: privet always hands it an open connection (see Store.migrate)."""

from alembic import context

from privet.store.schema import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
context.run_migrations()
