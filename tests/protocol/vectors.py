"""Test vectors of the WeChat Pay Global v2 spec, copied in (tests never read ../shared).

Sections 3.2-3.4 (signatures), 6.3 (paySign), 7.6 (notification sample) and 12.2 (req_info).
"""

from __future__ import annotations

from typing import Final

# --- spec 3.2: the official worked example -------------------------------------------------------
OFFICIAL_KEY: Final = "192006250b4c09247ec02edce69f6a2d"
OFFICIAL_FIELDS: Final = {
    "appid": "wxd930ea5d5a258f4f",
    "mch_id": "10000100",
    "device_info": "1000",
    "body": "test",
    "nonce_str": "ibuaiVcKdpRxkhJA",
}
OFFICIAL_STRING_A: Final = (
    "appid=wxd930ea5d5a258f4f&body=test&device_info=1000&mch_id=10000100&nonce_str=ibuaiVcKdpRxkhJA"
)
OFFICIAL_MD5: Final = "9A0A8659F005D6984697E2CA0A9CF3B7"
OFFICIAL_HMAC: Final = "6A9AE1657590FD6257D693A078E1C3E4BB6BA4DC30B23E0EE2496E54170DACD6"

# --- spec 3.3 / 6.3: the official Mini Program paySign example -----------------------------------
PAYSIGN_KEY: Final = "qazwsxedcrfvtgbyhnujmikolp111111"
PAYSIGN_FIELDS: Final = {
    "appId": "wxd678efh567hg6787",
    "nonceStr": "5K8264ILTKCH16CQ2502SI8ZNMTM67VS",
    "package": "prepay_id=wx2017033010242291fcfe0db70013231072",
    "signType": "MD5",
    "timeStamp": "1490840662",
}
PAYSIGN: Final = "22D9B4E54AB1950F51E0649E8810ACD6"

# --- spec 3.4: project vectors (fake key) --------------------------------------------------------
KEY: Final = "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6"
APPID: Final = "wx8888888888888888"
MCH_ID: Final = "1900000109"
SUB_APPID: Final = "wx1234567890abcdef"
SUB_MCH_ID: Final = "1900000110"
SUB_OPENID: Final = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"
OUT_TRADE_NO: Final = "ORDER20240101000001"

UNIFIED_ORDER_FIELDS: Final = {
    "appid": APPID,
    "body": "Demo Shop-Coffee",
    "fee_type": "HKD",
    "mch_id": MCH_ID,
    "nonce_str": "5K8264ILTKCH16CQ2502SI8ZNMTM67VS",
    "notify_url": "https://merchant.example.com/wxpay/notify",
    "out_trade_no": OUT_TRADE_NO,
    "spbill_create_ip": "203.0.113.10",
    "sub_appid": SUB_APPID,
    "sub_mch_id": SUB_MCH_ID,
    "sub_openid": SUB_OPENID,
    "total_fee": "1000",
    "trade_type": "JSAPI",
}
UNIFIED_ORDER_STRING_SIGN_TEMP: Final = (
    "appid=wx8888888888888888&body=Demo Shop-Coffee&fee_type=HKD&mch_id=1900000109"
    "&nonce_str=5K8264ILTKCH16CQ2502SI8ZNMTM67VS&notify_url=https://merchant.example.com/wxpay/notify"
    "&out_trade_no=ORDER20240101000001&spbill_create_ip=203.0.113.10&sub_appid=wx1234567890abcdef"
    "&sub_mch_id=1900000110&sub_openid=oUpF8uMuAJO_M2pxb1Q9zNjWeS6o&total_fee=1000&trade_type=JSAPI"
    "&key=a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6"
)
UNIFIED_ORDER_MD5: Final = "ADB78094AECABDCAEFBBFCCA21AB3DEE"
UNIFIED_ORDER_HMAC: Final = "5242DA9FB8FD2E1D875D082ACF70B86889AC1F279D7882F71D90B188060990C4"

UNIFIED_ORDER_RESPONSE_FIELDS: Final = {
    "return_code": "SUCCESS",
    "return_msg": "OK",
    "appid": APPID,
    "mch_id": MCH_ID,
    "sub_appid": SUB_APPID,
    "sub_mch_id": SUB_MCH_ID,
    "nonce_str": "IITRi8Iabbblz1Jc",
    "result_code": "SUCCESS",
    "prepay_id": "wx201411101639507cbf6ffd8b0779950874",
    "trade_type": "JSAPI",
}
UNIFIED_ORDER_RESPONSE_MD5: Final = "3EB34A8EE4E30E7BBDE0C8DE2DAC268C"
UNIFIED_ORDER_RESPONSE_XML: Final = b"""<xml>
  <return_code><![CDATA[SUCCESS]]></return_code>
  <return_msg><![CDATA[OK]]></return_msg>
  <appid><![CDATA[wx8888888888888888]]></appid>
  <mch_id><![CDATA[1900000109]]></mch_id>
  <sub_appid><![CDATA[wx1234567890abcdef]]></sub_appid>
  <sub_mch_id><![CDATA[1900000110]]></sub_mch_id>
  <nonce_str><![CDATA[IITRi8Iabbblz1Jc]]></nonce_str>
  <sign><![CDATA[3EB34A8EE4E30E7BBDE0C8DE2DAC268C]]></sign>
  <result_code><![CDATA[SUCCESS]]></result_code>
  <prepay_id><![CDATA[wx201411101639507cbf6ffd8b0779950874]]></prepay_id>
  <trade_type><![CDATA[JSAPI]]></trade_type>
</xml>"""

SIGN_AGAIN_FIELDS: Final = {
    "appId": SUB_APPID,
    "nonceStr": "e61463f8efa94090b1f366cccfbbb444",
    "package": "prepay_id=wx201411101639507cbf6ffd8b0779950874",
    "signType": "MD5",
    "timeStamp": "1704067200",
}
SIGN_AGAIN_MD5: Final = "0C7CD1C6DB4F5FD318B9DFEE9881E54D"
SIGN_AGAIN_HMAC: Final = "C681C4F2A7E9F38673E77E7C4D13D8454FBD07D327C217FE8EA05108EA9FD637"

ORDER_QUERY_FIELDS: Final = {
    "appid": APPID,
    "mch_id": MCH_ID,
    "nonce_str": "ec2316275641faa3aacf3cc599e8730f",
    "out_trade_no": OUT_TRADE_NO,
    "sub_appid": SUB_APPID,
    "sub_mch_id": SUB_MCH_ID,
}
ORDER_QUERY_MD5: Final = "7CBBABC4200A7EDDCB500EB27ACA2316"

CLOSE_ORDER_FIELDS: Final = {
    "appid": APPID,
    "mch_id": MCH_ID,
    "sub_appid": SUB_APPID,
    "sub_mch_id": SUB_MCH_ID,
    "out_trade_no": OUT_TRADE_NO,
    "nonce_str": "4ca93f17ddf3443ceabf72f26d64fe0e",
}
CLOSE_ORDER_MD5: Final = "7683F2C3A15DAF0A314051255B450027"

REFUND_FIELDS: Final = {
    "appid": APPID,
    "mch_id": MCH_ID,
    "nonce_str": "6cefdb308e1e2e8aabd48cf79e546a02",
    "notify_url": "https://merchant.example.com/wxpay/refund-notify",
    "out_refund_no": "REFUND20240102000001",
    "out_trade_no": OUT_TRADE_NO,
    "refund_fee": "500",
    "refund_fee_type": "HKD",
    "sub_appid": SUB_APPID,
    "sub_mch_id": SUB_MCH_ID,
    "total_fee": "1000",
}
REFUND_MD5: Final = "348F9CC5DB042DB7C28BDEF88A2BAAE2"

EXCHANGE_RATE_FIELDS: Final = {
    "appid": APPID,
    "date": "20240101",
    "fee_type": "HKD",
    "mch_id": MCH_ID,
    "sub_mch_id": SUB_MCH_ID,
}
EXCHANGE_RATE_MD5: Final = "B230F1DFA690567B5772144050EF1E93"

# --- spec 7.6: the sample payment notification (MD5, fake key) -----------------------------------
NOTIFICATION_MD5: Final = "68CEFB625095A0CF49601A93B7E9FB91"
NOTIFICATION_XML: Final = b"""<xml>
  <return_code><![CDATA[SUCCESS]]></return_code>
  <appid><![CDATA[wx8888888888888888]]></appid>
  <mch_id><![CDATA[1900000109]]></mch_id>
  <sub_appid><![CDATA[wx1234567890abcdef]]></sub_appid>
  <sub_mch_id><![CDATA[1900000110]]></sub_mch_id>
  <nonce_str><![CDATA[5d2b6c2a8db53831f7eda20af46e531c]]></nonce_str>
  <result_code><![CDATA[SUCCESS]]></result_code>
  <openid><![CDATA[oPq0Ot5Vn3Dxn0J5uEXAMPLEopenid]]></openid>
  <is_subscribe><![CDATA[N]]></is_subscribe>
  <sub_openid><![CDATA[oUpF8uMuAJO_M2pxb1Q9zNjWeS6o]]></sub_openid>
  <sub_is_subscribe><![CDATA[N]]></sub_is_subscribe>
  <trade_type><![CDATA[JSAPI]]></trade_type>
  <bank_type><![CDATA[OTHERS]]></bank_type>
  <total_fee>1000</total_fee>
  <fee_type><![CDATA[HKD]]></fee_type>
  <cash_fee>920</cash_fee>
  <cash_fee_type><![CDATA[CNY]]></cash_fee_type>
  <transaction_id><![CDATA[4200000001202401010000000001]]></transaction_id>
  <out_trade_no><![CDATA[ORDER20240101000001]]></out_trade_no>
  <time_end><![CDATA[20240101120510]]></time_end>
  <rate_value><![CDATA[92000000]]></rate_value>
  <sign><![CDATA[68CEFB625095A0CF49601A93B7E9FB91]]></sign>
</xml>"""

# --- spec 12.2: refund notification req_info -----------------------------------------------------
REQ_INFO_KEY_STAR: Final = "e19f0219977c8631f639d03aca2177ec"
OFFICIAL_KEY_STAR: Final = "d96eb16afdd491fa1e705096edbc2205"
REQ_INFO_PLAINTEXT: Final = b"<root><refund_status><![CDATA[SUCCESS]]></refund_status></root>"
REQ_INFO_CIPHERTEXT: Final = "K9mqYL81PAajr0fJPexsZYQSwd5UcIe+TDxMOXs9why75GH9yxCHlRYqqtbexBWr0FM/2draNr4izqy/Pyl0mg=="
