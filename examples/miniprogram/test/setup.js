// miniprogram-simulate renders pages into a DOM: jsdom provides one to node's test runner.
const { JSDOM } = require('jsdom')

const dom = new JSDOM('<!doctype html><html><body></body></html>', { pretendToBeVisual: true })
global.window = dom.window
global.document = dom.window.document
for (const name of ['Node', 'HTMLElement', 'Element', 'Event', 'CustomEvent', 'MutationObserver']) {
  global[name] = dom.window[name]
}
global.getComputedStyle = dom.window.getComputedStyle.bind(dom.window)
global.requestAnimationFrame = dom.window.requestAnimationFrame.bind(dom.window)
