"""The demo application's traffic: Faker-generated inserts, updates and deletes
against the raw tables, as the application's own role (never a superuser)."""
