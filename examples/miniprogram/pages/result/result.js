// The payment's result, as the shop backend knows it: it learns it from Minipay (signed webhooks, or
// by asking), never from the front end. The notification may come seconds after the cashier closed.
const api = require('../../api')
const config = require('../../config')

const DONE = { paid: 'Paid', partially_refunded: 'Paid', refunded: 'Paid' }

Component({
  data: { state: 'processing', title: 'Processing your payment…', message: '', order: null },
  methods: {
    onLoad(query) {
      this.orderId = query.order
      this.watch()
    },
    onUnload() {
      clearTimeout(this.timer)
      this.stopped = true
    },
    watch() {
      clearTimeout(this.timer)
      this.deadline = Date.now() + config.pollTimeout
      this.setData({ state: 'processing', title: 'Processing your payment…', message: '' })
      this.poll()
    },
    async poll() {
      try {
        const order = await api.getOrder(this.orderId)
        if (this.stopped) return
        this.setData({ order: { ...order, priceText: api.priceText(order.amount, order.currency) } })
        if (DONE[order.status]) {
          this.setData({ state: 'paid', title: 'Paid', message: 'Thank you! Your order is confirmed.' })
          return
        }
        if (order.status === 'closed') {
          this.setData({ state: 'closed', title: 'Not paid', message: 'This order was closed without a payment.' })
          return
        }
      } catch (error) {
        if (this.stopped) return
        if (error.code !== 'network') {
          this.setData({ state: 'error', title: 'Something went wrong', message: error.message })
          return
        }
      }
      if (Date.now() >= this.deadline) {
        this.setData({
          state: 'waiting',
          title: 'Still confirming',
          message: 'WeChat has not confirmed your payment yet. If you paid, it will show here shortly.'
        })
        return
      }
      this.timer = setTimeout(() => this.poll(), config.pollInterval)
    },
    onCheckAgain() {
      this.watch()
    },
    onBack() {
      wx.reLaunch({ url: '/pages/index/index' })
    }
  }
})
