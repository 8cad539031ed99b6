// A `wx` for node that does for real what WeChat does on a phone, against the Minipay sandbox:
// wx.login gets a js_code from the sandbox's POST /sandbox/login (as the user `wx.user`),
// wx.requestPayment pays with the sandbox's cashier (POST /sandbox/pay), wx.request calls the real
// shop backend. Navigation is recorded for the test to follow.
const FIVE = ['nonceStr', 'package', 'paySign', 'signType', 'timeStamp']

async function postJson(url, body) {
  const res = await fetch(url, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) })
  const data = await res.json()
  if (!res.ok) throw new Error(`${url} answered ${res.status}: ${JSON.stringify(data)}`)
  return data
}

function installWx({ sandboxUrl, appid }) {
  const storage = new Map()
  const wx = {
    user: 'alice',
    payments: [], // every object wx.requestPayment received (without the callbacks)
    cashier: [], // what the user does at the next cashiers: {outcome: 'cancel'}, {notify: 'late'}; default: pays
    navigations: [],

    login({ success, fail }) {
      postJson(sandboxUrl + '/sandbox/login', { appid, user: wx.user }).then(
        (res) => success({ code: res.code, errMsg: 'login:ok' }),
        (error) => fail({ errMsg: 'login:fail ' + error.message })
      )
    },

    request({ url, method = 'GET', data, header = {}, success, fail, complete }) {
      const init = { method, headers: { ...header } }
      if (data !== undefined) {
        init.body = JSON.stringify(data)
        init.headers['Content-Type'] = 'application/json'
      }
      fetch(url, init)
        .then(async (res) => {
          const text = await res.text()
          let body = text
          try {
            body = JSON.parse(text)
          } catch {}
          if (success) success({ statusCode: res.status, data: body, header: Object.fromEntries(res.headers), errMsg: 'request:ok' })
        })
        .catch((error) => fail && fail({ errMsg: 'request:fail ' + error.message }))
        .finally(() => complete && complete())
    },

    requestPayment({ success, fail, complete, ...params }) {
      wx.payments.push(params)
      const done = (ok, res) => {
        ;(ok ? success : fail)(res)
        if (complete) complete(res)
      }
      const keys = Object.keys(params).sort()
      if (keys.join() !== FIVE.join()) {
        done(false, { errMsg: 'requestPayment:fail parameter error: ' + keys.join() })
        return
      }
      const script = wx.cashier.shift() || {}
      postJson(sandboxUrl + '/sandbox/pay', { ...params, ...script }).then(
        (res) => done(res.errMsg === 'requestPayment:ok', { errMsg: res.errMsg }),
        (error) => done(false, { errMsg: 'requestPayment:fail ' + error.message })
      )
    },

    getStorageSync: (key) => (storage.has(key) ? storage.get(key) : ''),
    setStorageSync: (key, value) => storage.set(key, value),
    removeStorageSync: (key) => storage.delete(key),
    navigateTo: ({ url }) => wx.navigations.push(url),
    redirectTo: ({ url }) => wx.navigations.push(url),
    reLaunch: ({ url }) => wx.navigations.push(url)
  }
  global.wx = wx
  return wx
}

module.exports = { installWx, postJson, FIVE }
