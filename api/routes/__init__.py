"""Route modules; ``api.main.ROUTERS`` lists the routers the app includes."""
