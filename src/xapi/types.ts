/**
 * Typed XAPI records as the client returns them: plain, JSON-safe copies of the XAPI fields (XAPI's own
 * snake_case names, so they can be written verbatim into XO's backup metadata) plus `$ref`. Only the
 * fields backup relies on are typed; every record keeps the other fields XAPI sent.
 */

export type XapiRef = string

interface Base {
  $ref: XapiRef
  uuid: string
  other_config: Record<string, string>
  [field: string]: unknown
}

export interface XapiVm extends Base {
  name_label: string
  name_description: string
  power_state: 'Running' | 'Halted' | 'Paused' | 'Suspended'
  is_a_template: boolean
  is_a_snapshot: boolean
  is_control_domain: boolean
  snapshot_of: XapiRef
  snapshots: XapiRef[]
  /** XAPI datetime, e.g. `20241125T22:30:00Z` */
  snapshot_time: string
  tags: string[]
  VBDs: XapiRef[]
  VIFs: XapiRef[]
  blocked_operations: Record<string, string>
}

export interface XapiVdi extends Base {
  name_label: string
  name_description: string
  SR: XapiRef
  VBDs: XapiRef[]
  virtual_size: number
  physical_size: number
  type: string
  is_a_snapshot: boolean
  snapshot_of: XapiRef
  snapshots: XapiRef[]
  snapshot_time: string
  tags: string[]
}

interface XapiVbd extends Base {
  VM: XapiRef
  VDI: XapiRef
  device: string
  userdevice: string
  bootable: boolean
  mode: 'RO' | 'RW'
  type: 'Disk' | 'CD' | 'Floppy'
  empty: boolean
  currently_attached: boolean
}

interface XapiVif extends Base {
  VM: XapiRef
  network: XapiRef
  device: string
  MAC: string
  MTU: number
}

interface XapiSr extends Base {
  name_label: string
  type: string
  content_type: string
  shared: boolean
  VDIs: XapiRef[]
  physical_size: number
  physical_utilisation: number
}

interface XapiTask extends Base {
  name_label: string
  status: 'pending' | 'success' | 'failure' | 'cancelling' | 'cancelled'
  progress: number
  result: string
  error_info: string[]
}

interface XapiNetwork extends Base {
  name_label: string
  PIFs: XapiRef[]
}

interface XapiPif extends Base {
  network: XapiRef
  /** -1 when untagged */
  VLAN: number
}

interface XapiGuestMetrics extends Base {
  PV_drivers_detected: boolean
}

export interface XapiTypes {
  network: XapiNetwork
  VM_guest_metrics: XapiGuestMetrics
  PIF: XapiPif
  VM: XapiVm
  VDI: XapiVdi
  VBD: XapiVbd
  VIF: XapiVif
  SR: XapiSr
  task: XapiTask
}
export type XapiType = keyof XapiTypes
