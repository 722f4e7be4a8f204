/**
 * Tencent Cloud IM REST hosts by region (primary, then the backup for when DNS fails).
 * Source: ../shared/reference/tim-api.md. Tokyo has no known backup host.
 */
export const REGIONS = {
  china: ['console.tim.qq.com', 'adminapi.my-imcloud.com'],
  singapore: ['adminapisgp.im.qcloud.com', 'adminapisgp.my-imcloud.com'],
  seoul: ['adminapikr.im.qcloud.com', 'adminapikr.my-imcloud.com'],
  tokyo: ['adminapijpn.im.qcloud.com'],
  frankfurt: ['adminapiger.im.qcloud.com', 'adminapiger.my-imcloud.com'],
  india: ['adminapiind.im.qcloud.com', 'adminapiind.my-imcloud.com'],
  siliconvalley: ['adminapiusa.im.qcloud.com', 'adminapiusa.my-imcloud.com'],
  jakarta: ['adminapiidn.im.qcloud.com', 'adminapiidn.my-imcloud.com'],
} as const satisfies Record<string, readonly string[]>;

/** A region name accepted by `TIM_REGION`. */
export type Region = keyof typeof REGIONS;

/** Every accepted region name, in table order. */
export const REGION_NAMES = Object.keys(REGIONS) as Region[];

/** True when `name` is a known region. */
export function isRegion(name: string): name is Region {
  return Object.hasOwn(REGIONS, name);
}

/** The primary HTTPS base URL of a region, e.g. `https://console.tim.qq.com`. */
export function regionBaseUrl(region: Region): string {
  return `https://${REGIONS[region][0]}`;
}
