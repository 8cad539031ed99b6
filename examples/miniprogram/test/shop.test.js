// A real user, end to end: the mini program's pages (miniprogram-simulate) against the real shop
// backend and `minipay serve` in sandbox mode. tests/examples/test_miniprogram.py starts both and runs
// this with SHOP_URL and SANDBOX_URL set; without them it is skipped.
require('./setup')
const { describe, test, before } = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const path = require('node:path')
const simulate = require('miniprogram-simulate')
const { installWx, postJson, FIVE } = require('./wx')

const ROOT = path.join(__dirname, '..')
const { SHOP_URL, SANDBOX_URL } = process.env
const skip = SHOP_URL && SANDBOX_URL ? false : 'needs SHOP_URL and SANDBOX_URL (run by tests/examples/test_miniprogram.py)'

const config = require('../config')
const appid = JSON.parse(fs.readFileSync(path.join(ROOT, 'project.config.json'), 'utf8')).appid
let wx

const loaded = {}
// Open a page as WeChat would for `url` ("/pages/order/order?product=latte"): render it, call onLoad.
function open(url) {
  const [page, query = ''] = url.split('?')
  const file = path.join(ROOT, page)
  loaded[file] = loaded[file] || simulate.load(file, { rootPath: ROOT })
  const view = simulate.render(loaded[file])
  view.attach(document.createElement('parent-wrapper'))
  view.instance.onLoad(Object.fromEntries(new URLSearchParams(query)))
  return view
}

async function waitFor(condition, what, timeout = 20000) {
  const deadline = Date.now() + timeout
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('timed out waiting for ' + what)
    await simulate.sleep(50)
  }
}

const text = (view, selector) => {
  const found = view.querySelector(selector)
  if (!found) throw new Error(`no ${selector} in ${view.dom.innerHTML}`)
  return found.dom.textContent.trim()
}

async function nextPage() {
  const seen = wx.navigations.length
  await waitFor(() => wx.navigations.length > seen, 'a navigation')
  return wx.navigations[wx.navigations.length - 1]
}

// The user opens the shop, chooses a product and arrives on the order page.
async function chooseProduct(index) {
  const shop = open('/pages/index/index')
  await waitFor(() => shop.data.products.length > 0, 'the products')
  const navigation = nextPage()
  shop.querySelectorAll('.product')[index].dispatchEvent('tap')
  const order = open(await navigation)
  await waitFor(() => order.data.state === 'confirm', 'the order page')
  return order
}

async function tapPay(order) {
  const navigation = nextPage()
  order.querySelector('.pay').dispatchEvent('tap')
  return navigation
}

describe('the mini program against the shop backend and the sandbox', { skip }, () => {
  before(() => {
    config.backendUrl = SHOP_URL
    config.pollInterval = 200
    config.pollTimeout = 30000
    wx = installWx({ sandboxUrl: SANDBOX_URL, appid })
  })

  test('login, pay, paid', async () => {
    wx.user = 'alice'
    const order = await chooseProduct(0)
    assert.equal(text(order, '.name'), 'Latte')
    assert.equal(text(order, '.price'), 'HKD 18.00')
    const result = open(await tapPay(order))
    assert.match(wx.navigations.at(-1), /^\/pages\/result\/result\?order=ord/)
    await waitFor(() => result.data.state === 'paid', 'paid')
    assert.equal(text(result, '.status'), 'Paid')
    // wx.requestPayment got exactly the five parameters (no appId in a mini program).
    assert.deepEqual(Object.keys(wx.payments.at(-1)).sort(), FIVE)
    assert.match(wx.payments.at(-1).package, /^prepay_id=/)
  })

  test('cancel, then pay again with fresh parameters', async () => {
    wx.user = 'bob'
    const order = await chooseProduct(1)
    wx.cashier.push({ outcome: 'cancel' })
    order.querySelector('.pay').dispatchEvent('tap')
    await waitFor(() => order.data.state === 'cancelled', 'the cancel')
    assert.match(text(order, '.message'), /You cancelled the payment/)
    assert.equal(text(order, '.pay'), 'Pay again')
    const cancelled = wx.payments.at(-1)
    const orderId = order.data.order.id

    const result = open(await tapPay(order))
    const again = wx.payments.at(-1)
    assert.equal(order.data.order.id, orderId, 'the same order')
    assert.notEqual(again.paySign, cancelled.paySign, 'fresh pay parameters')
    assert.deepEqual(Object.keys(again).sort(), FIVE)
    await waitFor(() => result.data.state === 'paid', 'paid after the retry')
    assert.equal(wx.navigations.at(-1), '/pages/result/result?order=' + orderId)
  })

  test('a late notification: the page waits, then shows paid', async () => {
    wx.user = 'carol'
    const order = await chooseProduct(2)
    wx.cashier.push({ notify: 'never' }) // the sandbox holds WeChat's notification until it is resent
    const url = await tapPay(order)
    const result = open(url)
    await simulate.sleep(2000)
    // requestPayment said ok, but nobody has confirmed the payment: the page does not say paid.
    assert.equal(result.data.state, 'processing')
    assert.equal(text(result, '.status'), 'Processing your payment…')
    const outTradeNo = new URLSearchParams(url.split('?')[1]).get('order') // the shop's order id
    const res = await fetch(`${SANDBOX_URL}/sandbox/notifications?out_trade_no=${outTradeNo}&kind=payment`)
    const [held] = (await res.json()).notifications
    assert.equal(held.state, 'suppressed')
    await postJson(`${SANDBOX_URL}/sandbox/notifications/${held.id}/resend`, {})
    await waitFor(() => result.data.state === 'paid', 'paid after the late notification')
    assert.equal(text(result, '.status'), 'Paid')
  })

  test('errors are shown in plain words', async () => {
    const gone = open('/pages/order/order?product=teapot')
    await waitFor(() => gone.data.state === 'error', 'the error')
    assert.equal(text(gone, '.message'), 'This product is no longer sold.')

    config.backendUrl = 'http://127.0.0.1:9' // nothing listens there
    try {
      const shop = open('/pages/index/index')
      await waitFor(() => shop.data.message !== '', 'the error')
      assert.equal(text(shop, '.message'), 'Cannot reach the shop. Check your connection and try again.')
    } finally {
      config.backendUrl = SHOP_URL
    }
  })
})
