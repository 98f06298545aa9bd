"""The model service (privet serve): FastAPI gateway with auth, tenants, budgets, PII masking and restoration, audit."""
