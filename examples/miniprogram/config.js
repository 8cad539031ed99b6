// Where the shop backend runs. For the sandbox on your machine, the URL printed by
// `python -m examples.shop_backend`; in production your backend's HTTPS URL, which must also be
// listed as a "request legal domain" (request合法域名) in the mini program admin console.
module.exports = {
  backendUrl: 'http://127.0.0.1:8100',
  // How the result page asks the backend whether the order is paid.
  pollInterval: 1000, // ms between two questions
  pollTimeout: 30000 // ms before it says the confirmation is late and offers "Check again"
}
