// Products. Pages are built with Component() (a supported way to write pages, with the page
// lifecycle in `methods`) so that miniprogram-simulate can run them in the tests.
const api = require('../../api')

Component({
  data: { products: [], loading: true, message: '' },
  methods: {
    onLoad() {
      this.load()
    },
    async load() {
      this.setData({ loading: true, message: '' })
      try {
        const res = await api.products()
        const products = res.data.map((p) => ({ ...p, priceText: api.priceText(p.price, p.currency) }))
        this.setData({ products, loading: false })
      } catch (error) {
        this.setData({ loading: false, message: error.message })
      }
    },
    onChoose(event) {
      wx.navigateTo({ url: '/pages/order/order?product=' + event.currentTarget.dataset.id })
    }
  }
})
