// The mini program's only server is the shop backend (config.backendUrl). The Minipay service's API
// keys are server-side secrets: the mini program never calls Minipay itself.
const config = require('./config')

const TOKEN_KEY = 'shop_token'
let loginInFlight = null

// An error the pages can show as is: `message` is in plain words.
class ShopError extends Error {
  constructor(code, message, status) {
    super(message)
    this.code = code
    this.status = status
  }
}

const NETWORK_MESSAGE = 'Cannot reach the shop. Check your connection and try again.'

function rawRequest(method, path, data) {
  return new Promise((resolve, reject) => {
    const token = wx.getStorageSync(TOKEN_KEY)
    wx.request({
      url: config.backendUrl + path,
      method,
      data,
      header: token ? { Authorization: 'Bearer ' + token } : {},
      timeout: 15000,
      success(res) {
        if (res.statusCode >= 200 && res.statusCode < 300) {
          resolve(res.data)
          return
        }
        const error = (res.data && res.data.error) || {}
        reject(new ShopError(error.code || 'server_error', error.message || 'The shop had a problem. Please try again.', res.statusCode))
      },
      fail() {
        reject(new ShopError('network', NETWORK_MESSAGE, 0))
      }
    })
  })
}

function wxLogin() {
  return new Promise((resolve, reject) => {
    wx.login({
      success(res) {
        if (res.code) resolve(res.code)
        else reject(new ShopError('login_failed', 'WeChat could not log you in. Please try again.', 0))
      },
      fail() {
        reject(new ShopError('login_failed', 'WeChat could not log you in. Please try again.', 0))
      }
    })
  })
}

// wx.login -> the shop's POST /login -> its session token (kept in storage).
function ensureLogin() {
  if (wx.getStorageSync(TOKEN_KEY)) return Promise.resolve()
  if (!loginInFlight) {
    loginInFlight = wxLogin()
      .then((code) => rawRequest('POST', '/login', { code }))
      .then((res) => wx.setStorageSync(TOKEN_KEY, res.token))
      .finally(() => {
        loginInFlight = null
      })
  }
  return loginInFlight
}

// A call as the logged-in user; an expired session logs in again once.
async function request(method, path, data) {
  await ensureLogin()
  try {
    return await rawRequest(method, path, data)
  } catch (error) {
    if (error.status !== 401) throw error
    wx.removeStorageSync(TOKEN_KEY)
    await ensureLogin()
    return rawRequest(method, path, data)
  }
}

// wx.requestPayment with exactly the five parameters the backend returned (a mini program passes
// no appId: WeChat takes it from the mini program). Resolves {ok, cancelled, errMsg}; never rejects.
function requestPayment(payParams) {
  return new Promise((resolve) => {
    wx.requestPayment({
      timeStamp: payParams.timeStamp,
      nonceStr: payParams.nonceStr,
      package: payParams.package,
      signType: payParams.signType,
      paySign: payParams.paySign,
      success(res) {
        resolve({ ok: true, cancelled: false, errMsg: res.errMsg })
      },
      fail(res) {
        const errMsg = (res && res.errMsg) || 'requestPayment:fail'
        resolve({ ok: false, cancelled: errMsg === 'requestPayment:fail cancel', errMsg })
      }
    })
  })
}

function priceText(amount, currency) {
  return currency + ' ' + (amount / 100).toFixed(2)
}

module.exports = {
  ShopError,
  ensureLogin,
  requestPayment,
  priceText,
  products: () => request('GET', '/products'),
  createOrder: (productId) => request('POST', '/orders', { product_id: productId }),
  getOrder: (orderId) => request('GET', '/orders/' + orderId),
  payParams: (orderId) => request('POST', '/orders/' + orderId + '/pay-params')
}
