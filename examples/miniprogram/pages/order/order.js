// Confirm and pay: the shop backend creates the order and its payment; wx.requestPayment gets the
// five parameters it returned. A cancelled cashier can be reopened with fresh parameters.
const api = require('../../api')

Component({
  data: { product: null, order: null, state: 'loading', message: '', busy: false },
  methods: {
    async onLoad(query) {
      this.productId = query.product
      try {
        const res = await api.products()
        const product = res.data.find((p) => p.id === this.productId)
        if (!product) {
          this.setData({ state: 'error', message: 'This product is no longer sold.' })
          return
        }
        this.setData({ product: { ...product, priceText: api.priceText(product.price, product.currency) }, state: 'confirm' })
      } catch (error) {
        this.setData({ state: 'error', message: error.message })
      }
    },
    async onPay() {
      if (this.data.busy || !this.data.product) return
      this.setData({ busy: true, message: '' })
      try {
        // First tap: a new order. After a cancel: the same order, fresh pay parameters.
        const order = this.data.order
          ? await api.payParams(this.data.order.id)
          : await api.createOrder(this.productId)
        this.setData({ order, state: 'paying' })
        const result = await api.requestPayment(order.pay_params)
        if (result.ok) {
          // WeChat's "ok" is not proof of payment: the result page asks the shop backend.
          wx.redirectTo({ url: '/pages/result/result?order=' + order.id })
        } else if (result.cancelled) {
          this.setData({ state: 'cancelled', message: 'You cancelled the payment. Tap "Pay again" when you are ready.' })
        } else {
          this.setData({ state: 'failed', message: 'The payment did not go through. Please try again.' })
        }
      } catch (error) {
        this.setData({ state: 'failed', message: error.message })
      } finally {
        this.setData({ busy: false })
      }
    }
  }
})
