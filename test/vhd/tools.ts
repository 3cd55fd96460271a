/** Independent tools the VHD tests check our output with: qemu-img (qemu-utils) and vhdiinfo (libvhdi-utils). */
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'

const run = promisify(execFile)

// qemu sizes a VHD from its CHS geometry unless the creator is one it knows to use the footer size
// ('tap\0' XenServer, 'win ', ...); XO's 'xo  ' is not in its list, so force the footer size as XAPI/XO mean it.
const vpc = (path: string): string => `driver=vpc,force_size_calc=current_size,file.filename=${path}`

/** `qemu-img compare` of a VHD (format vpc) with a raw image: resolves when identical, rejects with qemu's output otherwise. */
export async function qemuCompare(vhdPath: string, rawPath: string): Promise<void> {
  await run('qemu-img', ['compare', '--image-opts', vpc(vhdPath), `driver=raw,file.filename=${rawPath}`])
}

export async function qemuInfo(vhdPath: string): Promise<{ 'virtual-size': number; format: string }> {
  const { stdout } = await run('qemu-img', ['info', '--output=json', '--image-opts', vpc(vhdPath)])
  return JSON.parse(stdout) as { 'virtual-size': number; format: string }
}

export async function vhdiinfo(vhdPath: string): Promise<string> {
  const { stdout } = await run('vhdiinfo', [vhdPath])
  return stdout
}

export async function convertToVpc(rawPath: string, vhdPath: string): Promise<void> {
  await run('qemu-img', ['convert', '-f', 'raw', '-O', 'vpc', '-o', 'subformat=dynamic,force_size=on', rawPath, vhdPath])
}
