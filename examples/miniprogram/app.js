const api = require('./api')

App({
  onLaunch() {
    // Log in early; pages log in again on their own when this has not finished or failed.
    api.ensureLogin().catch(() => {})
  }
})
